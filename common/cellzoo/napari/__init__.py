"""cellzoo in napari (`pip install -e ".[napari]"`): the dock widget and the reader/writer of napari.yaml."""
