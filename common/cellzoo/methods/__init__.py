"""One package per method, mirroring bundles/: everything particular to one method lives in its package."""
