"""Exports of trained bundle networks for other tools: the BioImage Model Zoo format (`bioimageio`)."""
