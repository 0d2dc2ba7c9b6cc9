"""The embedded demo: a procedural talking-head clip, the pipeline runner and the results page."""
