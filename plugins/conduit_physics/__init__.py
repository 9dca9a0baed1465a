"""Nuclear physics for AT-TPC analysis: a library, shared by the simulator and by stage plugins.

Import the module you need (importing this package loads nothing heavy)::

    from conduit_physics.species import species
    from conduit_physics.stopping import gas_by_name, stopping_table
    from conduit_physics.kinematics import two_body, excitation_energy

* :mod:`.species`     nuclides by name: charge, mass number, nuclear mass (MeV), momentum and B-rho;
* :mod:`.stopping`    gases (ideal-gas density), Bethe stopping powers (MeV/mm), range-energy tables (mm);
* :mod:`.kinematics`  relativistic two-body reactions a(b, c)d: products from the CM angle, and the
  inverse (missing mass): the residual's excitation energy and the CM angle from a measured ejectile.

Units everywhere: energies and masses in MeV (masses as rest energies, MeV/c²),
momenta in MeV/c, B-rho in T·m, lengths in mm, angles in radians, pressure in
Torr, temperature in K, densities in g/cm³. This package has no entry point and
registers no stage: it is a plain library (see docs/writing-a-plugin.md).
"""
