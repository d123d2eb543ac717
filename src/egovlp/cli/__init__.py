"""Thin command-line front ends: parse arguments, load a config, build objects, run."""
