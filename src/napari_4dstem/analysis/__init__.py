"""The science, one module per capability (virtual imaging, COM/DPC, calibration, Bragg disks,
lattice, strain, crystals, orientation mapping)."""
