"""Constants shared by every part of the code: camera order, Occ3D classes and grid, colours.

Conventions used everywhere in this repository:
  * ego frame: x forward, y left, z up (nuScenes ego / LiDAR convention), metres.
  * camera frame: OpenCV, x right, y down, z forward.
  * ``cam2ego`` maps camera coordinates to the ego frame, ``ego2global`` ego to world (4x4, float).
  * voxel volumes are laid out (X, Y, Z) with X the forward axis, like Occ3D's ``labels.npz``.
"""

# Surround cameras in ring order: camera i overlaps with cameras (i - 1) % 6 and (i + 1) % 6.
CAMS = [
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
]
NUM_CAMS = len(CAMS)


def ring_neighbours(i):
    """Indices of the two spatially adjacent cameras of camera ``i`` (left and right in the ring)."""
    return (i - 1) % NUM_CAMS, (i + 1) % NUM_CAMS


# Occ3D-nuScenes classes (index = label id in labels.npz). 17 is "free".
OCC_CLASSES = [
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
]
NUM_SEM_CLASSES = 17  # without free
FREE_ID = 17
IGNORE_ID = 255
# 2D labels: sky (the Grounded-SAM labels' "sky", networks/gsv_loss.py --sky_id / --w_sky: rays to the sky see no
# occupancy); left out of the semantic cross-entropy like IGNORE_ID.
SKY_ID = 254
# mIoU* leaves out "others" and "other_flat" (GaussianOcc / OccNeRF convention).
MIOU_STAR_EXCLUDE = (0, 12)
# The release's runner.py also logs a 13-class mean ("mIoU without empty") without others, bicycle, motorcycle
# and other_flat.
MIOU_13_EXCLUDE = (0, 2, 6, 12)

# Occ3D-nuScenes grid: 200 x 200 x 16 voxels of 0.4 m.
# OCC3D_RANGE is the documented range (Occ3D README, the authors' read-out, SparseOcc's RayIoU). The released labels
# sit two voxels higher in the ego frame: layer 0 holds the road surface (ego z = 0), so voxel k spans
# z = 0.4 k +- 0.2 m, i.e. OCC3D_LABEL_RANGE (evidence: docs/occ3d_convention.md). Synthetic labels and the
# occupancy read-out use OCC3D_LABEL_RANGE.
OCC3D_RANGE = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)  # xmin, ymin, zmin, xmax, ymax, zmax
OCC3D_LABEL_RANGE = (-40.0, -40.0, -0.2, 40.0, 40.0, 6.2)
OCC3D_VOXEL = 0.4
OCC3D_SHAPE = (200, 200, 16)

# RGB colours (0-255) per class, for pictures. Index 17 (free) is never drawn.
OCC_COLORS = [
    (0, 0, 0),  # others
    (255, 120, 50),  # barrier
    (255, 192, 203),  # bicycle
    (255, 255, 0),  # bus
    (0, 150, 245),  # car
    (0, 255, 255),  # construction_vehicle
    (200, 180, 0),  # motorcycle
    (255, 0, 0),  # pedestrian
    (255, 240, 150),  # traffic_cone
    (135, 60, 0),  # trailer
    (160, 32, 240),  # truck
    (255, 0, 255),  # driveable_surface
    (139, 137, 137),  # other_flat
    (75, 0, 75),  # sidewalk
    (150, 240, 80),  # terrain
    (230, 230, 250),  # manmade
    (0, 175, 0),  # vegetation
    (255, 255, 255),  # free
]

# Frames of a batch's ``imgs`` / ``ego2global``: 0 previous, 1 current, 2 next, and with --near_stride 3 / 4 the
# near previous / next; NEAR_FRAMES picks the near pair as (previous, current, next).
NEAR_FRAMES = [3, 1, 4]
