"""Built-in statistics computed from answer counts, one module per statistic.

The registry (:mod:`persona_collapse.stats.registry`) imports every module of this
package the first time it is read; a module registers its statistic with
:func:`~persona_collapse.stats.registry.register_statistic`. Adding a statistic is
adding a module here (and its tests).
"""
