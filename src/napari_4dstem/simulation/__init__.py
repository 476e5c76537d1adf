"""Simulation: sample datasets, kinematic/Prismatic/abTEM engines, augmentation, training sets."""
