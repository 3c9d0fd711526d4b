"""MONAI-style transforms shared by the cellzoo bundles."""
