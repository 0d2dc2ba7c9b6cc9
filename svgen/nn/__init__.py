"""Shared building blocks of every network: equalised-learning-rate layers and the GAN losses."""
from svgen.nn.equalized import EqualConv1d, EqualConv2d, EqualLinear, activation_gain
from svgen.nn.losses import (d_logistic_fake, d_logistic_loss, d_logistic_real, g_nonsaturating_loss,
                             path_length_penalty, path_lengths, r1_penalty)

__all__ = ["EqualLinear", "EqualConv2d", "EqualConv1d", "activation_gain", "g_nonsaturating_loss",
           "d_logistic_real", "d_logistic_fake", "d_logistic_loss", "r1_penalty", "path_lengths",
           "path_length_penalty"]
