"""The one-off probe behind this folder's conv measurements (CUDA only; ~10 s on one H100):

    python3 docs/results/runs/2026-12-06/speed-h100-layout-split/probe_conv.py > probe_conv.txt

The 3D CNN's first convolution (C -> 32, 3x3x3, at 300 x 300 x 24, bf16 autocast), forward + backward, for inputs
built several ways: A-K one convolution (E: the gather's (1, C, P) memory viewed straight as a volume, which
PyTorch's layout guess reads as NCDHW), S1-S6 the 64 + 1 split that networks/occ_net.SplitConv3d runs, against 65
channels concatenated or padded to 72. Per case: ms, each tensor's layout / PyTorch's guess, and the large copies.
"""
import torch, time
from torch._prims_common import suggest_memory_format
dev = "cuda"
torch.backends.cudnn.benchmark = True
X, Y, Z, C, O = 300, 300, 24, 65, 32
CL = torch.channels_last_3d

def lay(t):
    return ("NDHWC" if t.is_contiguous(memory_format=CL) and not t.is_contiguous() else "NCDHW" if t.is_contiguous() else str(t.stride())) + f"/{str(suggest_memory_format(t))[-10:]}"

def time_ms(step, warm=3, reps=10):
    """(the last warm-up step's output, mean ms of ``reps`` steps)."""
    for _ in range(warm):
        y = step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    return y, (time.perf_counter() - t) / reps * 1e3


def make_x(kind, dtype):
    if kind == "permute":
        x = torch.randn(1, X, Y, Z, C, device=dev, dtype=dtype).permute(0, 4, 1, 2, 3)
    elif kind == "lift":
        P = X * Y * Z
        x = torch.randn(P, C, device=dev, dtype=dtype).view(1, P, C).transpose(1, 2).view(1, C, X, Y, Z)
    elif kind == "ncdhw":
        x = torch.randn(1, C, X, Y, Z, device=dev, dtype=dtype)
    return x

def run(name, kind="permute", xdtype=torch.float32, amp=True, xgrad=True, wcl=True, gcl=True, c=C):
    global C
    C0 = C; C = c
    conv = torch.nn.Conv3d(C, O, 3, padding=1, bias=False).to(dev)
    if wcl:
        conv = conv.to(memory_format=CL)
    x = make_x(kind, xdtype).detach().requires_grad_(xgrad)
    g = torch.randn(1, X, Y, Z, O, device=dev, dtype=torch.bfloat16).permute(0, 4, 1, 2, 3)
    if not gcl:
        g = g.contiguous()
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            y = conv(x)
        y.backward(g)
        return y
    y, ms = time_ms(step)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        y = conv(x)
    si = getattr(y.grad_fn, "_saved_input", None)
    y.backward(g)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA], record_shapes=True) as prof:
        step(); torch.cuda.synchronize()
    cps = []
    for e in prof.events():
        if e.name == "aten::copy_" and e.input_shapes and e.input_shapes[0] and len(e.input_shapes[0]) == 5 and e.input_shapes[0][2] == X:
            ch, p = [], e.cpu_parent
            while p is not None and len(ch) < 3:
                ch.append(p.name); p = p.cpu_parent
            cps.append(f"{e.device_time_total/1e3:.2f}ms C={e.input_shapes[0][1]} {'<'.join(ch)}")
    print(f"{name:40s} {ms:6.2f} ms  x {lay(x)} {x.dtype} saved {lay(si) if si is not None else '-'} {si.dtype if si is not None else ''} y {lay(y)} xgrad {lay(x.grad) if x.grad is not None else '-'}")
    for cp in cps:
        print("      copy", cp)
    C = C0

print(torch.__version__, torch.backends.cudnn.version(), torch.cuda.get_device_name())
run("A fp32 permute amp")
run("B bf16 permute amp", xdtype=torch.bfloat16)
run("C fp32 permute amp, x no grad", xgrad=False)
run("D fp32 permute amp, w contiguous", wcl=False)
run("E fp32 lift view amp", kind="lift")
run("F fp32 permute amp, g NCDHW", gcl=False)
run("G 64ch fp32 permute amp", c=64)
run("H 32ch fp32 permute amp", c=32)
run("I 32ch bf16 permute amp", c=32, xdtype=torch.bfloat16)
run("J 72ch bf16 permute amp", c=72, xdtype=torch.bfloat16)
run("K fp32 ncdhw amp", kind="ncdhw")

def run_split(name, xdtype=torch.bfloat16, visdtype=torch.bfloat16, mode="split"):
    W = torch.nn.Parameter(torch.randn(O, 65, 3, 3, 3, device=dev).to(memory_format=CL) * 0.05)
    x = torch.randn(1, X, Y, Z, 64, device=dev, dtype=xdtype).permute(0, 4, 1, 2, 3).requires_grad_(True)
    vis = torch.rand(1, X, Y, Z, 1, device=dev, dtype=visdtype).permute(0, 4, 1, 2, 3)
    g = torch.randn(1, X, Y, Z, O, device=dev, dtype=torch.bfloat16).permute(0, 4, 1, 2, 3)
    import torch.nn.functional as F
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if mode == "split":
                y = F.conv3d(x, W[:, :64], padding=1) + F.conv3d(vis, W[:, 64:], padding=1)
            elif mode == "64only":
                y = F.conv3d(x, W[:, :64], padding=1)
            elif mode == "cat65":
                y = F.conv3d(torch.cat([x, vis.to(x.dtype)], 1), W, padding=1)
            elif mode == "pad72":
                xx = torch.cat([x, vis.to(x.dtype), x.new_zeros(1, 7, X, Y, Z).contiguous(memory_format=CL)], 1)
                y = F.conv3d(xx, F.pad(W, (0, 0, 0, 0, 0, 0, 0, 7)), padding=1)
        y.backward(g)
        return y
    y, ms = time_ms(step)
    print(f"{name:40s} {ms:6.2f} ms  y {lay(y)} {y.dtype}")

run_split("S1 64 bf16 only", mode="64only")
run_split("S2 split 64 bf16 + vis bf16")
run_split("S3 split 64 bf16 + vis fp32", visdtype=torch.float32)
run_split("S4 split 64 fp32 + vis fp32", xdtype=torch.float32, visdtype=torch.float32)
run_split("S5 cat 65 bf16", mode="cat65")
run_split("S6 pad 72 bf16", mode="pad72")
