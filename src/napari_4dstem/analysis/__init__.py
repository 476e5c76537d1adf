"""The science, one sub-package per capability.

``virtual``  detectors, virtual images, centre of mass and DPC, detector and origin calibration
``bragg``    probe templates, disk detection, lattice fits, strain
``crystal``  CIF structures, kinematic diffraction, scattering factors, symmetry, Bloch waves
``acom``     orientation plans, matching, results and IPF colours
``classify`` features, decompositions and clustering of patterns
``phase``    parallax, SSB and iterative ptychography

Each package re-exports its modules' public names (imported on first use); a layers contract in
``pyproject.toml`` keeps ``virtual`` and ``crystal`` at the bottom and ``acom``, ``classify``,
``phase`` at the top.
"""
