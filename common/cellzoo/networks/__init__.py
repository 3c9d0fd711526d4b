"""Network architectures used by the cellzoo bundles."""

from cellzoo.networks.mediar import MEDIARFormer

__all__ = ["MEDIARFormer"]
