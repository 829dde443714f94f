"""The kernel table: which kernel a packed linear layer runs, decided once, at pack time.

A PackedLinear computes y = x_q W_q^T + b with x_q = s_x c_x + o_x (per token) and
W_q = s_w c_w + o_w (per row); only the inner products c_x . c_w run over K, on a kernel
that the two code sets select (docs/kernels.md, "The kernel table"):

    activation codes c_x           weights c_w          kernel
    float (no quantizer)           ternary or binary    sign-add (float activations)
    {-1, +1}    (signed 1 bit)     binary {-1, +1}      xnor-popcount
    {-1, +1}                       ternary              ternary x ternary planes
    {-1, 0, +1} (signed 2 bits)    ternary or binary    ternary x ternary planes
    int8        (signed 3-8 bits)  ternary or binary    ternary x int8
    {0..Qp}     (unsigned k bits)  ternary              bit planes
    {0..Qp}                        binary               bit planes x signs
    anything                       bcq (k sign planes)  bcq-lut (on the fake-quantized floats)
    anything else                  anything else        float matmul (no bit kernel for these codes)

"Anything else": 8-bit (or FP) weights, per-channel activation scales (they do not factor out
of the sum over K), signed codes wider than int8, unsigned codes wider than 8 bits.
"""
FLOAT = "float matmul (no bit kernel for these codes)"

KERNELS = {
    # (activation codes, weight kind): kernel
    ("float", "ternary"): "sign-add (float activations)",
    ("float", "binary"): "sign-add (float activations)",
    ("pm1", "binary"): "xnor-popcount",
    ("pm1", "ternary"): "ternary x ternary planes",
    ("ternary", "binary"): "ternary x ternary planes",
    ("ternary", "ternary"): "ternary x ternary planes",
    ("int8", "binary"): "ternary x int8",
    ("int8", "ternary"): "ternary x int8",
    ("unsigned", "ternary"): "bit planes",
    ("unsigned", "binary"): "bit planes x signs",
}


def activation_codes(q) -> str:
    """The set an input quantizer's codes lie in: "float" (no quantizer), "pm1", "ternary",
    "int8", "unsigned" (k bit planes), or "other" (no bit kernel: see the module docstring)."""
    if q is None:
        return "float"
    if getattr(q, "channels", None):                      # one scale per input channel
        return "other"
    qp = getattr(q, "qp", 1)
    if not q.signed:
        return "unsigned" if qp <= 255 else "other"
    if q.precision == 1:
        return "pm1"
    return "ternary" if qp == 1 else "int8" if qp <= 127 else "other"


def choose_kernel(input_quantizer, weight_kind: str) -> str:
    """The kernel of a layer with this input quantizer and weight kind ("ternary", "binary",
    "bcq" or "dense"), from the table above."""
    if weight_kind == "bcq":
        return "bcq-lut"
    return KERNELS.get((activation_codes(input_quantizer), weight_kind), FLOAT)


def plane_bits(q) -> int:
    """Bit planes of an unsigned quantizer's codes 0..Qp: k = bit length of Qp."""
    return int(getattr(q, "qp", 1)).bit_length()
