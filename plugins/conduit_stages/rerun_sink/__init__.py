"""The ``rerun`` sink (live event display, histograms, rates, log) and the ``rerun-importer-attpc`` importer.

Importing this package is cheap; rerun is imported when the sink opens.
"""
