"""Two lists of samples (`A... -- B...`) as one markdown table fragment: each list sorted, then
the ratio of their medians. With `--median A...`, the median of one list (3 decimals). A
sample that is not a number, or that reports failed records ("N (!k failed)"), is left out.
Used by benches/kafka_throughput.sh."""
import statistics
import sys


def numbers(xs):
    out = []
    for x in xs:
        if "!" in x:
            continue
        try:
            out.append(float(x.split()[0]))
        except (ValueError, IndexError):
            pass
    return sorted(out)


args = sys.argv[1:]
if args[:1] == ["--median"]:
    xs = numbers(args[1:])
    print(f"{statistics.median(xs):.3f}" if xs else "-")
    sys.exit(0)
cut = args.index("--")
a, b = numbers(args[:cut]), numbers(args[cut + 1:])
show = lambda xs: " ".join(f"{x:.0f}" for x in xs) or "not measured"
ratio = f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "-"
print(f"{show(a)} | {show(b)} | {ratio}")
