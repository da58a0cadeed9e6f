"""tools/diagnostics/carve_readout.carve: a half-transparent layer in front of an opaque wall is freed, the wall and
a layer opaque enough to end the rays are kept."""
import numpy as np

from tools.diagnostics.carve_readout import carve


def _camera():
    K = np.array([[60.0, 0, 50], [0, 60.0, 50], [0, 0, 1]])
    M = np.eye(4)
    M[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # camera z (forward) = ego x, camera x = -ego y, camera y = -ego z
    M[:3, 3] = [0.0, 0.0, 1.5]
    return K, M, (100, 100)


def test_a_faint_layer_in_front_of_a_wall_is_freed_and_the_wall_kept():
    o = np.zeros((200, 200, 16), np.float32)
    o[110, 80:120, 0:10] = 0.9  # a wall 4.0-4.4 m ahead of the camera
    o[109, 80:120, 0:10] = 0.3  # a faint layer just in front of it
    c = carve(o, o > 0.2, [_camera()], stride=2)
    seen = (slice(94, 106), slice(1, 8))  # the part of both layers well inside the image
    assert c[109][seen].mean() > 0.9 and not c[110].any()


def test_a_layer_opaque_enough_to_end_the_rays_is_kept():
    o = np.zeros((200, 200, 16), np.float32)
    o[110, 80:120, 0:10] = 0.9
    o[109, 80:120, 0:10] = 0.6  # transmittance 0.4 after it: the rays end here
    c = carve(o, o > 0.2, [_camera()], stride=2)
    assert not c.any()
