"""Peak memory of INT8 calibration: a model @ its input size on N generated images (issue: must fit in 8 GB).

    python benchmarks/calibration_memory.py --model resnet50 --input-size 448 --images 512 [--method minmax]

Exports the model (random init) in this process, writes N JPEGs to a temporary folder, then calibrates in
a fresh child process whose peak RSS (ru_maxrss) is reported — the export's torch memory is not counted.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

CHILD = r"""
import json, resource, sys, time
from fgvc_edge.precision import calibrate_onnx
onnx_path, data, count, method, target, cache = sys.argv[1:7]
start = time.perf_counter()
result = calibrate_onnx(onnx_path, data, num_images=int(count), method=method, target=target, cache_dir=cache, force=True)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stride": result.record["quantization"]["collection_stride"], "int8_check": result.record["int8_check"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--target", default="tensorrt")
    args = parser.parse_args()

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        model = create_model(args.model, input_size=args.input_size)
        onnx_path = export_onnx(model, os.path.join(tmp, "model.onnx")).path
        del model
        rng = np.random.default_rng(0)
        data = os.path.join(tmp, "images")
        os.makedirs(data)
        side = model_resize = int(args.input_size * 1.25)
        for i in range(args.images):
            coarse = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((side, model_resize), Image.BILINEAR).save(os.path.join(data, "%04d.jpg" % i))
        out = subprocess.run([sys.executable, "-c", CHILD, onnx_path, data, str(args.images), args.method, args.target,
                              os.path.join(tmp, "cache")], check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures.update(vars(args))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
