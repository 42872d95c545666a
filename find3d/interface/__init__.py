"""The FIND interface: task specs, embedding sampler, layers, pixel decoder, criterion.

Modules: ``config`` (InterfaceConfig), ``spec`` (Table 6 task specs and the attention masks built
from them), ``collate`` (Samples -> FindBatch), ``sampler``, ``layers``, ``pixel_decoder``,
``model`` (FindInterface, FindModel), ``matcher`` and ``criterion``; ``syntax`` parses query strings.
"""
