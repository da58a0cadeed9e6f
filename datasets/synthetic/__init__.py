"""Synthetic street scenes written as a nuScenes-format set with Occ3D labels (the built-in default dataset).

``scene`` lays out a world, ``raycast`` + ``texture`` render cameras and LiDAR, ``occupancy`` computes the Occ3D
labels, ``frame`` puts one sample together, ``writer`` writes the tables and ``generate`` the whole set.
"""
