"""Synthetic street scenes written as a nuScenes-format set with Occ3D labels (the built-in default dataset).

``scene`` lays out a world, ``raycast`` + ``texture`` render cameras and LiDAR, ``occupancy`` computes the Occ3D
semantics and ``visibility`` their LiDAR / camera masks, ``frame`` puts one frame together, ``writer`` writes the
tables (keyframes and camera sweeps) and ``generate`` the whole set.
"""
