"""The model: what a backward implements and what its true gradient is (DESIGN §1-3, §6).

``spec`` (the spec, its windows), ``names`` (the gradient names, in one order), ``functions``
(activations, outputs, losses), ``ops`` (the array namespaces the one forward runs in), ``cell``
(the recurrent cells, each one step forward and one step back), ``forward`` (the one forward and the
windowed objective), ``backprop`` (the one reverse recursion, and the mistake variants built on it),
``cases`` (drawing cases), ``coverage``, ``memo`` (pure functions of a case's arrays, once per
content), ``kinks``, ``tolerance`` and ``compare`` (judging one
gradient), ``reproducer`` (how to replay a case). Internal: the public names are in ``bptt_check``.
"""
