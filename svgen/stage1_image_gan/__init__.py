"""svgen.stage1_image_gan"""
