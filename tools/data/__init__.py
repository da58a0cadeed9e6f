"""Data preparation: splits, LiDAR depth, occupancy labels, synthetic sets, the authors' files."""
