"""svgen.stage2_motion"""
