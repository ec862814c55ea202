"""A stand-in for `helios merge OUTPUT PART...`: concatenates the parts."""
import sys

output, *parts = sys.argv[1:]
with open(output, "w") as out:
    for part in parts:
        with open(part) as handle:
            out.write(handle.read())
print(f"merged {len(parts)} parts into {output}")
