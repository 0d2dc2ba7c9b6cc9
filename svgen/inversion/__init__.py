"""svgen.inversion"""
