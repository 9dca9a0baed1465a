"""The ``histogram`` sink: 1-D and 2-D histograms of track and event quantities, with gates.

Importing this package is cheap; the classes live in :mod:`.hset`,
:mod:`.gates`, :mod:`.spec` and :mod:`.sink`.
"""
