#!/usr/bin/env python3
"""Writes crates/amp/src/backend/ops/*.rs: `Amp<I>`'s impl of each of Burn
0.21's op traits, one method per trait method (required and defaulted), each
forwarding to the inner backend after the autocast rule for that op.

Forwarding every method matters: a trait default would otherwise run Burn's
generic decomposition on `Amp<I>` instead of the inner backend's own kernel,
and the defaults of `float_detach`, `float_set_require_grad` or
`ad_enabled` would switch gradients off. Run it again when Burn is bumped:

    python3 crates/amp/tools/gen_forward.py ~/.cargo/registry/src/*/burn-backend-0.21.0
"""
import re
import subprocess
import sys
from pathlib import Path

# Ops that run in the compute dtype (PyTorch autocast's lower-precision list).
LOW = {
    "float_matmul", "linear", "conv1d", "conv2d", "conv3d", "deform_conv2d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "attention", "prelu",
}
# Ops that run in f32 (PyTorch autocast's fp32 lists; softmin is softmax of
# the negation there). Beyond PyTorch: means (Burn's batch norm computes its
# statistics with mean_dim, where cuDNN's computes them in f32 internally) and
# ctc_loss (a loss, like nll_loss).
F32 = {
    "float_exp", "float_log", "float_log1p", "float_recip", "float_tan", "float_cosh",
    "float_sinh", "float_acos", "float_asin", "float_powf", "float_powi", "float_powf_scalar",
    "float_powi_scalar", "float_sum", "float_sum_dim", "float_prod", "float_prod_dim",
    "float_mean", "float_mean_dim", "float_cumsum", "float_cumprod", "softmax", "log_softmax",
    "softmin", "layer_norm", "ctc_loss", "interpolate",
}
# Ops computed by a function of this crate rather than the inner backend's
# method: conv1d, conv2d, max_pool2d and relu through greentrain-flexconv (its CPU routes
# on `Autodiff<Flex>`, the conv path), products, linear layers and layer norms
# through greentrain's kernels where the inner backend is registered.
CUSTOM = {
    "conv1d": "super::conv1d::<I>",
    "conv2d": "super::conv2d::<I>",
    "float_add": "greentrain_flexconv::add::<I>",
    "float_cast": "greentrain_flexconv::cast::<I>",
    "float_matmul": "super::matmul::<I>",
    "float_reshape": "greentrain_flexconv::reshape::<I>",
    "linear": "super::linear::<I>",
    "layer_norm": "super::layer_norm::<I>",
    "max_pool2d": "super::max_pool2d::<I>",
    "relu": "greentrain_flexconv::relu::<I>",
}
# Converts a value of the inner backend's type to Amp's, by return type.
REWRAP = {
    "TensorPrimitive<B>": "super::rewrap_primitive::<I>({})",
    "MaxPool1dWithIndices<B>": "{{ let r = {}; MaxPool1dWithIndices::new(r.output, r.indices) }}",
    "MaxPool2dWithIndices<B>": "{{ let r = {}; MaxPool2dWithIndices::new(r.output, r.indices) }}",
    "MaxPool1dBackward<B>": "MaxPool1dBackward::new({}.x_grad)",
    "MaxPool2dBackward<B>": "MaxPool2dBackward::new({}.x_grad)",
    "DeformConv2dBackward<B>": "super::rewrap_deform::<I>({})",
}
# Converts an argument of Amp's type to the inner backend's, by parameter type.
UNWRAP = {
    "TransactionPrimitive<B>": "super::unwrap_transaction::<I>({})",
    "TensorPrimitive<B>": "super::unwrap_primitive::<I>({})",
    "QuantizationParametersPrimitive<B>": "QuantizationParametersPrimitive {{ scales: {}.scales }}",
}
FILES = {
    "tensor.rs": ("FloatTensorOps", "float.rs"),
    "int_tensor.rs": ("IntTensorOps", "int.rs"),
    "bool_tensor.rs": ("BoolTensorOps", "bool.rs"),
    "activation.rs": ("ActivationOps", "activation.rs"),
    "qtensor.rs": ("QTensorOps", "qtensor.rs"),
    "transaction.rs": ("TransactionOps", "transaction.rs"),
    "modules/base.rs": ("ModuleOps", "module.rs"),
}


def strip_comments(src):
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            i = src.find("*/", i) + 2
        elif c == '"':
            j = i + 1
            while src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i : j + 1])
            i = j + 1
        elif c == "'" and i + 2 < n and (src[i + 2] == "'" or src[i + 1] == "\\"):
            j = src.find("'", i + 2 if src[i + 1] == "\\" else i + 1)
            out.append(src[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src, i, open_, close):
    depth = 0
    while True:
        if src[i] == open_:
            depth += 1
        elif src[i] == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1


def split_top(s):
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if s.startswith("->", i):
            cur.append("->")
            i += 2
            continue
        if c in "<([":
            depth += 1
        elif c in ">)]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def methods(body):
    """(attrs, name, generics, params, ret, where) of each fn at depth 0."""
    i, depth, attrs = 0, 0, []
    while i < len(body):
        c = body[i]
        if c == "{":
            i = matching(body, i, "{", "}") + 1
            continue
        if c == "#" and body.startswith("#[", i):
            j = matching(body, i + 1, "[", "]")
            attrs.append(body[i : j + 1])
            i = j + 1
            continue
        m = re.match(r"(?:async\s+)?fn\s+(\w+)", body[i:])
        if m and (i == 0 or not body[i - 1].isalnum()):
            name = m.group(1)
            i += m.end()
            generics = ""
            if body[i] == "<":
                j = i
                d = 0
                while True:
                    if body[j] == "<":
                        d += 1
                    elif body[j] == ">" and body[j - 1] != "-":
                        d -= 1
                        if d == 0:
                            break
                    j += 1
                generics = body[i : j + 1]
                i = j + 1
            j = matching(body, i, "(", ")")
            params = split_top(body[i + 1 : j])
            i = j + 1
            # return type and where clause up to `;` or `{` at depth 0
            k, d = i, 0
            while True:
                if body.startswith("->", k):
                    k += 2
                    continue
                ch = body[k]
                if ch in "<([":
                    d += 1
                elif ch in ">)]":
                    d -= 1
                elif ch in ";{" and d == 0:
                    break
                k += 1
            tail = body[i:k].strip()
            where = ""
            wm = re.search(r"\bwhere\b", tail)
            if wm:
                where = tail[wm.start() :]
                tail = tail[: wm.start()].strip()
            ret = tail[2:].strip() if tail.startswith("->") else ""
            yield attrs, name, generics, params, ret, where
            attrs = []
            i = k if body[k] == "{" else k + 1
            continue
        i += 1


def selfify(t):
    return re.sub(r"\bB\b", "Self", t).replace("crate::", "burn_backend::")


def arg_expr(pname, ptype, rule):
    t = ptype.replace(" ", "")
    if t in UNWRAP:
        return UNWRAP[t].format(pname)
    cast = {"low": "super::low::<I>", "f32": "super::full::<I>"}.get(rule)
    if cast is None:
        return pname
    if t == "FloatTensor<B>":
        return f"{cast}({pname})"
    if t == "Option<FloatTensor<B>>":
        return f"{pname}.map({cast})"
    return pname


def generate(attrs, name, generics, params, ret, where):
    floats = [p for p in params if p.split(":", 1)[-1].replace(" ", "")
              in ("FloatTensor<B>", "Option<FloatTensor<B>>", "Vec<FloatTensor<B>>")]
    rule = "low" if name in LOW else "f32" if name in F32 else None
    pre = ""
    names = []
    for p in params:
        pname, ptype = (x.strip() for x in p.split(":", 1))
        pname = pname.replace("mut ", "")
        names.append((pname, ptype))
    if rule is None and len(floats) >= 2 or any(
        t.replace(" ", "") == "Vec<FloatTensor<B>>" for _, t in names
    ):
        rule = "promote"
    args = []
    if rule == "promote":
        fl = [(n, t.replace(" ", "")) for n, t in names if t.replace(" ", "") in
              ("FloatTensor<B>", "Option<FloatTensor<B>>", "Vec<FloatTensor<B>>")]
        parts = []
        for n, t in fl:
            if t == "FloatTensor<B>":
                parts.append(f"core::iter::once({n}.dtype())")
            else:
                parts.append(f"{n}.iter().map(|t| t.dtype())")
        chain = parts[0] + "".join(f".chain({p})" for p in parts[1:])
        pre = f"        let wide = super::widest({chain});\n"
        for n, t in fl:
            if t == "FloatTensor<B>":
                pre += f"        let {n} = super::to::<I>({n}, wide);\n"
            elif t == "Option<FloatTensor<B>>":
                pre += f"        let {n} = {n}.map(|t| super::to::<I>(t, wide));\n"
            else:
                pre += f"        let {n}: Vec<_> = {n}.into_iter().map(|t| super::to::<I>(t, wide)).collect();\n"
        args = [UNWRAP[t.replace(" ", "")].format(n) if t.replace(" ", "") in UNWRAP else n
                for n, t in names]
    else:
        args = [arg_expr(n, t, rule) for n, t in names]
    call = f"{CUSTOM.get(name, 'I::' + name)}({', '.join(args)})"
    norm_ret = ret.replace(" ", "")
    for k, v in REWRAP.items():
        if norm_ret == k.replace(" ", ""):
            call = v.format(call)
    sig_params = ", ".join(f"{n}: {selfify(t)}" for n, t in names)
    sig = f"    fn {name}{selfify(generics)}({sig_params})"
    if ret:
        sig += f" -> {selfify(ret)}"
    if where:
        sig += f" {selfify(where)}"
    keep = [a for a in attrs if a.startswith("#[cfg")]
    lines = [f"    {a}" for a in keep]
    lines.append(sig + " {")
    if pre:
        lines.append(pre.rstrip("\n"))
    lines.append(f"        {call}")
    lines.append("    }")
    return "\n".join(lines), rule


def main():
    root = Path(sys.argv[1]) / "src/backend/ops"
    out = Path(__file__).resolve().parent.parent / "src/backend/ops"
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for src_name, (trait, dst) in FILES.items():
        src = strip_comments((root / src_name).read_text())
        m = re.search(rf"pub trait {trait}<B: Backend>[^{{]*{{", src)
        start = m.end() - 1
        end = matching(src, start, "{", "}")
        body = src[start + 1 : end]
        items = []
        for meth in methods(body):
            code, rule = generate(*meth)
            items.append(code)
            if rule:
                table.append((meth[1], rule))
        header = (
            f"// @generated by crates/amp/tools/gen_forward.py from burn-backend 0.21.0's\n"
            f"// `{trait}`: every method forwards to the inner backend after its\n"
            f"// autocast rule. Do not edit by hand; edit the generator's rule tables.\n"
            "#![allow(unused_imports, clippy::all)]\n\n"
            "use super::super::Amp;\n"
            "use burn_backend::ops::*;\n"
            "use burn_backend::quantization::*;\n"
            "use burn_backend::tensor::*;\n"
            "use burn_backend::*;\n"
            "use burn_backend::tensor::Device;\n"
            "use core::future::Future;\n"
            "use core::ops::Range;\n\n"
            f"impl<I: Backend> {trait}<Self> for Amp<I> {{\n"
        )
        (out / dst).write_text(header + "\n\n".join(items) + "\n}\n")
        subprocess.run(["rustfmt", "--edition", "2021", str(out / dst)], check=True)
        print(f"{dst}: {len(items)} methods")
    names = {"low": "Low", "f32": "F32", "promote": "Promote"}
    rows = "".join(f'    ("{n}", Rule::{names[r]}),\n' for n, r in sorted(table))
    (out / "table.rs").write_text(
        "// @generated by crates/amp/tools/gen_forward.py: the ops with a rule\n"
        "// (every other op keeps its inputs' dtypes), sorted by name.\n\n"
        "use super::Rule;\n\n"
        f"pub(super) const RULES: &[(&str, Rule)] = &[\n{rows}];\n"
    )
    print(len(table), "ops with a rule")


if __name__ == "__main__":
    main()
