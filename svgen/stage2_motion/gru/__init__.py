"""StyleVideoGAN's GRU motion model: ``model`` (G, critic, the :class:`GRUMotion` wrapper), ``data``
(training windows), ``penalties`` (gradient penalties) and ``train``."""
