"""A stand-in renderer: writes one line per frame of its range, slowly, like a real one."""
import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("-o", dest="output", required=True)
parser.add_argument("--start-frame", type=int, required=True)
parser.add_argument("--frame-count", type=int, required=True)
args = parser.parse_args()

with open(args.output, "w") as out:
    for frame in range(args.start_frame, args.start_frame + args.frame_count):
        out.write(f"frame {frame:04d}\n")
        time.sleep(0.01)
print(f"rendered frames {args.start_frame}-{args.start_frame + args.frame_count - 1} to {args.output}")
