"""Occ3D-format occupancy labels derived from the LiDAR and the 3D boxes of a nuScenes-layout scene.

``scene.py`` reads one scene's LiDAR frames (keyframes and, where the tables list them, sweeps), their boxes and
the keyframes' cameras from the tables; ``labels.py`` aggregates the scene's points (static points in the world,
box points in their box) and writes per keyframe ``semantics``, ``mask_lidar`` and ``mask_camera``. The method,
its classes and its measured agreement with exact labels: docs/occ_gt.md. Command: tools/data/make_occ_gt_nusc.py.
"""
