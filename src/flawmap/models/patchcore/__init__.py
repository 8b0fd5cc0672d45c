"""PatchCore (Roth et al., CVPR 2022): memory-bank anomaly detection with a greedy coreset."""
