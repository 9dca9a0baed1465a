"""The public analysis library for AT-TPC stage plugins: shared by the simulator, the built-in stages and yours.

Plugins never import each other's modules; what several of them need lives
here, documented and kept stable (docs/writing-a-plugin.md). Import the module
you need (importing this package loads nothing heavy)::

    from conduit_physics.species import species
    from conduit_physics.stopping import gas_by_name, stopping_table
    from conduit_physics.kinematics import two_body, excitation_energy
    from conduit_physics.tracks import circle_fit, direction_code, helix
    from conduit_physics.clustering import Clusterer, ClusterParams
    from conduit_physics.quantities import QUANTITIES, extract
    from conduit_physics.gates import pipeline_gates, evaluate_gate
    from conduit_physics.histograms import Histograms

* :mod:`.species`     nuclides by name: charge, mass number, nuclear mass (MeV), momentum and B-rho;
* :mod:`.stopping`    gases (ideal-gas density), Bethe stopping powers (MeV/mm), range-energy tables (mm);
* :mod:`.kinematics`  relativistic two-body reactions a(b, c)d: products from the CM angle, and the
  inverse (missing mass): the residual's excitation energy and the CM angle from a measured ejectile;
  kinematic curves and the shared ``KinematicCurves`` viewers draw them from;
* :mod:`.tracks`      track geometry: circle fit, direction (FORWARD/BACKWARD/NONE), smoothing splines,
  the per-track estimator kernels, helices under the project's field convention, a warm-up cloud;
* :mod:`.clustering`  the base class of every clusterer (implement ``labels(cloud)``; size cut, LOF
  cleaning, direction, joining and warm-up are done for you), its post-processing, LOF, a KD-tree;
* :mod:`.quantities`  per-track and per-event quantities read from the standard artifacts (what
  histograms and gates are drawn on);
* :mod:`.gates`       SpecTcl-style gates (polygon, interval, and/or/not) and the gates a pipeline declares;
* :mod:`.histograms`  the histograms as other sinks see them: the ``Histograms`` the histogram
  stage publishes, and the ``HistogramRecorder`` a sink that saves them declares.

Units everywhere: energies and masses in MeV (masses as rest energies, MeV/c²),
momenta in MeV/c, B-rho in T·m, lengths in mm, angles in radians (histogram
axes and gates on angles: degrees), pressure in Torr, temperature in K,
densities in g/cm³. This package has no entry point and registers nothing:
it is a plain library on top of the core's public API.
"""
