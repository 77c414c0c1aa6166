"""``nfkit sfm``: neural incremental structure-from-motion on an SDF level set (after Level-S²fM, CVPR 2023)."""
