"""StyleInV (modulated encoder + FFA-APE motion): ``model`` (network, weight transfer, the
:class:`StyleInVMotion` wrapper), ``data`` (sparse clip sampling), ``disc`` and ``train``."""
