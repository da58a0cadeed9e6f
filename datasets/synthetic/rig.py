"""The sensor rig of the synthetic set: the real nuScenes rig of scene-0916 (car n015), stored as numbers.

Extrinsics are sensor -> ego (translation in metres, rotation quaternion w, x, y, z), intrinsics belong to the
1600 x 900 nuScenes images; ``intrinsics(h, w)`` rescales them to the generated image size.
"""
import numpy as np

from utils.constants import CAMS
from utils.geometry import pose_matrix

NUSC_IMG_HW = (900, 1600)

# channel: (translation, rotation wxyz, (fx, fy, cx, cy) at 1600 x 900)
CAMERA_RIG = {
    "CAM_FRONT": ([1.70079118954, 0.0159456324149, 1.51095763913],
                  [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
                  (1266.417203046554, 1266.417203046554, 816.2670197447984, 491.50706579294757)),
    "CAM_FRONT_RIGHT": ([1.5508477543, -0.493404796419, 1.49574800619],
                        [0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485],
                        (1260.8474446004698, 1260.8474446004698, 807.968244525554, 495.3344268742088)),
    "CAM_BACK_RIGHT": ([1.0148780988, -0.480568219723, 1.56239545128],
                       [0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798],
                       (1259.5137405846733, 1259.5137405846733, 807.2529053838625, 501.19579884916527)),
    "CAM_BACK": ([0.0283260309358, 0.00345136761476, 1.57910346144],
                 [0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578],
                 (809.2209905677063, 809.2209905677063, 829.2196003259838, 481.77842384512485)),
    "CAM_BACK_LEFT": ([1.03569100218, 0.484795032713, 1.59097014818],
                      [0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753],
                      (1256.7414812095406, 1256.7414812095406, 792.1125740759628, 492.7757465151356)),
    "CAM_FRONT_LEFT": ([1.52387798135, 0.494631336551, 1.50932822144],
                       [0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068],
                       (1272.5979470598488, 1272.5979470598488, 826.6154927353808, 479.75165386361925)),
}
LIDAR_RIG = ([0.943713, 0.0, 1.84023],
             [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817])


def intrinsics(h, w, cam):
    """3x3 intrinsics of ``cam`` for an h x w image (the 1600 x 900 ones scaled per axis)."""
    fx, fy, cx, cy = CAMERA_RIG[cam][2]
    sx, sy = w / NUSC_IMG_HW[1], h / NUSC_IMG_HW[0]
    return np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])


def cam2ego():
    """(6, 4, 4) camera -> ego transforms in ``CAMS`` order."""
    return np.stack([pose_matrix(*CAMERA_RIG[c][:2]) for c in CAMS])


def lidar2ego():
    """4x4 LIDAR_TOP -> ego transform."""
    return pose_matrix(*LIDAR_RIG)
