"""One module per command, each with one checkpoint-level function the CLI calls once.

=================  =====================================================
``interp train``   :func:`interpcli.ops.train.train`
``interp eval``    :func:`interpcli.ops.evaluate.evaluate_checkpoint`
``interp info``    :func:`interpcli.ops.info.checkpoint_info`
``interp models``  :func:`interpcli.ops.registries.model_rows` (``datasets``, ``methods`` alike)
``interp explain`` :func:`interpcli.ops.explain.explain_checkpoint`
``interp occlude`` :func:`interpcli.ops.occlude.occlude_checkpoint`
=================  =====================================================

Each module also holds the model-level twin (``explain(model, inputs, ...)``) for Python
users who already have a model in memory.
"""
