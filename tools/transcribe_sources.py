"""How the real-data manifests were made: transcribe the provenance record of the team's local copies
(``<copies>/sources.yaml``) into ``data_manifests/<id>.yaml``. Values are copied, none invented; the per-dataset
choices (id, chapters, short licence name, volume kinds, extra caveats) are the dictionaries below.

    python tools/transcribe_sources.py ../shared/data data_manifests
"""
import re
import sys
from pathlib import Path

import yaml

COPIES = Path(sys.argv[1])
OUT = Path(sys.argv[2])
D = yaml.safe_load((COPIES / "sources.yaml").read_text())["datasets"]

SYNTHSEG_TABLE = {}
for line in (COPIES / "synthseg-labels" / "labels table.txt").read_text().splitlines():
    parts = line.split(None, 1)
    if len(parts) == 2 and parts[0].isdigit():
        SYNTHSEG_TABLE[int(parts[0])] = parts[1].strip()

CFG = {
    "topcow-roi": dict(id="topcow_roi", chapters=["vaesselsparse", "hyperbolic"],
                       license="TopCoW 2024 data terms: open use, the source must be given, commercial use needs the "
                               "data owner's permission (no licence in the source repository)"),
    "airquant-airway": dict(id="airquant_airway", chapters=["vaesselsparse", "hyperbolic"],
                            license="GPL-3.0 (repository); sample CT data CC BY 3.0 (QIN LUNG CT)"),
    "niivue-mra": dict(id="niivue_mra", chapters=["sparsevm", "vaesselsparse"], license="CC BY-NC 4.0"),
    "vesselexpress-lightsheet": dict(id="vesselexpress_lightsheet", chapters=["vpbsd", "vaesselsparse"],
                                     license="GPL-3.0"),
    "vessel-express-napari-liver": dict(id="vessel_express_napari_liver", chapters=["vpbsd"], license="BSD-3-Clause"),
    "voxelmorph-test-scan": dict(id="voxelmorph_test_scan", chapters=["sparsevm"], license="Apache-2.0",
                                 caveats=["The loader casts seg to int32 (all its float64 values are integers)."]),
    "synthseg-labels": dict(id="synthseg_labels", chapters=["sparsevm", "hyperbolic"], license="Apache-2.0",
                            caveats=["Lateral ventricles: SynthSeg maps generation label 136 to 4 and 163 to 43 "
                                     "(also 137->5, 164->44, 25->2, 57->41); for lateral-ventricle Dice use {4, 136} "
                                     "and {43, 163}.",
                                     "The loader's label names are the 33 SynthSeg output structures of 'labels "
                                     "table.txt'; the maps also hold generation labels that have no name there."]),
    "deepmedic-brats2015": dict(id="deepmedic_brats2015", chapters=["hyperbolic"], license="CC BY-NC-SA 3.0 CH",
                                caveats=["brainmask.nii.gz is int32 with NIfTI scaling and decodes to 0 / 0.99999997: "
                                         "use > 0.5 (the loader does).",
                                         "OTMultiClass.nii.gz is stored as float32 with values {0,1,2,3,4}; the "
                                         "loader casts it to int32. Label names follow the BraTS convention; the "
                                         "DeepMedic repository does not name the classes."]),
    "stroke-mri": dict(id="stroke_mri", chapters=["hyperbolic", "sparsevm"], license="MIT"),
}


def hashes(f):
    return [f"md5:{f['md5']}", f"sha256:{f['sha256']}"] if f.get("md5") else [f"sha256:{f['sha256']}"]


def is_data(f):
    return not f["role"].startswith("upstream")


SHARED = {}


def shared(key, table):
    """One labels mapping per dataset, written once in the YAML (an anchor) and referred to by every volume."""
    return SHARED.setdefault(key, dict(table))


def volumes(key, v):
    out = []
    what = v["what"]
    for f in v["files"]:
        if not is_data(f):
            continue
        n, role = f["name"], f["role"]
        if key == "topcow-roi":
            vol = {"file": n, "kind": "labels", "labels": shared("topcow", what["labels"])}
            if "flip" in role:
                vol["note"] = ("constructed left/right-flip test fixture (" + what["flipped_test_variants"][n]
                               + "); not anatomical ground truth")
            out.append(vol)
        elif key == "airquant-airway":
            out.append({"file": n, "kind": "mask", "labels": dict(what["labels"][n])})
        elif key in ("niivue-mra", "stroke-mri"):
            out.append({"file": n, "kind": "image"})
        elif key == "vesselexpress-lightsheet":
            if n == "000.tif":
                out.append({"file": n, "kind": "image", "spacing": None, "note": "no physical voxel size recorded"})
            else:
                out.append({"file": n, "kind": "mask", "labels": {0: "background", 1: "vessel"}, "spacing": None,
                            "note": "stored {0, 255} (255 vessel); returned as bool (> 0)"})
        elif key == "vessel-express-napari-liver":
            pass  # member of the sdist: added below
        elif key == "voxelmorph-test-scan":
            if n == "test_scan.npz":
                out.append({"file": n, "key": "vol", "kind": "image", "spacing": None,
                            "note": "T1, skull-stripped, intensities in [0, 1]; voxel size not stored"})
                out.append({"file": n, "key": "seg", "kind": "labels", "spacing": None,
                            "note": "FreeSurfer (aseg) label values stored as float64; cast to int32; voxel size "
                                    "not stored"})
        elif key == "synthseg-labels":
            if n.startswith("training_seg_"):
                out.append({"file": n, "kind": "labels", "labels": shared("synthseg", SYNTHSEG_TABLE)})
        elif key == "deepmedic-brats2015":
            base = n.rsplit("/", 1)[-1]
            if base.startswith(("Flair", "T1c")):
                out.append({"file": n, "kind": "image"})
            elif base == "OTMultiClass.nii.gz":
                out.append({"file": n, "kind": "labels", "labels": shared("brats", what["labels"])})
            elif base == "brainmask.nii.gz":
                out.append({"file": n, "kind": "mask", "threshold": 0.5,
                            "labels": shared("brainmask", {0: "outside the mask", 1: "inside (air threshold)"}),
                            "note": "int32 with NIfTI scaling, decodes to 0 / 0.99999997: mask = value > 0.5"})
    if key == "vessel-express-napari-liver":
        out.append({"file": "Raw_liver_1.tiff", "kind": "image", "spacing": None,
                    "note": "(z, y, x) uint16; no physical voxel size recorded"})
    return out


def layout(key, v, files_entry):
    lines = []
    for f in v["files"]:
        where = f"{f['name']}" if key == "vessel-express-napari-liver" else f"raw/{f['name']}"
        desc = f["role"]
        shape = f.get("shape") or f.get("shape_zyx")
        if shape:
            desc += f", shape {' x '.join(map(str, shape))}"
        sp = f.get("voxel_spacing")
        if isinstance(sp, list):
            desc += f", spacing {' x '.join(map(str, sp))}"
        lines.append(f"{where}   {desc}")
    if key == "vessel-express-napari-liver":
        lines.append("raw/vessel-express-napari-0.0.9.tar.gz   the PyPI sdist (absent when a mirror gave the two "
                     "members directly)")
    return "\n".join(lines) + "\n"


def origin_of(v):
    o = v["origin"]
    if o.get("type") == "pypi":
        return {"type": "pypi", "package": o["package"], "version": o["version"], "project_url": o["project_url"],
                "sdist": o["sdist"]["url"], "path_in_sdist": o["path_in_sdist"],
                "source_repository_stated": o["source_repository_stated"]}
    b = o["bytes_obtained_from"]
    out = {"type": "github", "repository": b["repository"], "commit": b["commit"], "commit_date": b["commit_date"],
           "branch": b["branch"]}
    if b.get("path_prefix"):
        out["path_prefix"] = b["path_prefix"]
    return out


def notes(key, v):
    o = v["origin"]
    lic = v["license"]
    parts = []
    if o.get("type") == "pypi":
        parts.append(f"Origin: PyPI {o['package']} {o['version']} sdist ({o['sdist']['filename']}, "
                     f"{o['sdist']['size_bytes']} bytes); sha256 and md5 of the sdist as recorded; the image is the "
                     f"sdist member {o['path_in_sdist']}. Only the listed members are extracted, each checked "
                     f"against its own sha256 and md5. Source repository stated in PKG-INFO: "
                     f"{o['source_repository_stated']}.")
    else:
        b = o["bytes_obtained_from"]
        parts.append(f"Origin: {b['url']} at commit {b['commit']} ({b['commit_date']}, branch {b['branch']}); "
                     f"every URL is the raw file at that commit.")
        if o.get("primary"):
            parts.append("Canonical distribution: " + o["primary"]["record"] + ".")
    parts.append("Sizes, sha256 and md5 transcribed from the provenance record of the team's local copies "
                 "(sources.yaml, which checked every GitHub file against its git blob id at the commit).")
    parts.append("Licence as recorded: " + lic["name"])
    parts.append("Upstream data source: " + str(v["upstream_data_source"]).strip())
    for k in ("note", "note_on_copy"):
        if lic.get(k):
            parts.append("Licence note: " + re.sub(r",? -? ?copied here as ([^;\s]+)", r" (fetched with the data as \1)", lic[k]))
    w = v["what"]
    for k in ("label_mapping", "labels_note", "geometry_note", "image_not_included", "train_valid_test_copies",
              "skeleton_method", "label_507"):
        if w.get(k):
            parts.append(f"{k.replace('_', ' ').capitalize()}: {w[k]}")
    for n in w.get("notes") or []:
        parts.append(n)
    return "\n".join(parts) + "\n"


def manifest(key, v):
    c = CFG[key]
    o = v["origin"]
    if o.get("type") == "pypi":
        homepage = o["project_url"]
        sd = o["sdist"]
        members = [{"path": (o["path_in_sdist"] if f["name"] == "Raw_liver_1.tiff"
                             else o["path_in_sdist"].split("/")[0] + "/" + f["origin"]["sdist_member"]),
                    "name": f["name"], "size_bytes": f["size_bytes"], "hash": hashes(f)} for f in v["files"]]
        files = [{"url": sd["url"], "name": sd["filename"], "size_bytes": sd["size_bytes"],
                  "hash": [f"md5:{sd['md5']}", f"sha256:{sd['sha256']}"], "extract": "tar.gz", "members": members}]
    else:
        homepage = o["bytes_obtained_from"]["url"]
        files = [{"url": f["origin"]["raw_url"], "name": f["name"], "size_bytes": f["size_bytes"],
                  "hash": hashes(f), "extract": "none"} for f in v["files"]]
    total = v["total_bytes"]
    m = {
        "id": c["id"],
        "mirror_id": key,
        "title": v["title"],
        "chapters": c["chapters"],
        "role": "; ".join(v["best_use"]),
        "homepage": homepage,
        "access": "open",
        "license": c["license"],
        "license_stated_in": [re.sub(r",? -? ?copied here as ([^;\s]+)", r" (fetched with the data as \1)", x)
                              for x in v["license"]["stated_in"]],
        "citation": " ".join(v["citation"]),
        "size": f"{total / 1e6:.2f} MB ({total:,} bytes, {len(v['files'])} files)",
        "modality": v["what"]["modality"],
        "origin": origin_of(v),
        "files": files,
        "manual": None,
        "layout": layout(key, v, files),
        "loader": "real_volumes",
        "volumes": volumes(key, v),
        "caveats": list(v["caveats"]) + c.get("caveats", []),
        "notes": notes(key, v),
    }
    return m


class Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return not any(data is t for t in SHARED.values())


def str_presenter(dumper, data):
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


Dumper.add_representer(str, str_presenter)

for key in CFG:
    m = manifest(key, D[key])
    text = (f"# Transcribed from the provenance record (sources.yaml) of the team's local copies ({key}); the files\n"
            f"# themselves are never copied into this repository: fetch them with `companion data fetch {m['id']}`.\n")
    body = yaml.dump(m, Dumper=Dumper, sort_keys=False, width=118, allow_unicode=True)
    order = []
    for vol in m["volumes"]:
        for name, table in SHARED.items():
            if vol.get("labels") is table and name not in order:
                order.append(name)
    body = re.sub(r"([&*])id0*(\d+)", lambda mt: f"{mt.group(1)}{order[int(mt.group(2)) - 1]}_labels", body)
    text += body
    (OUT / f"{m['id']}.yaml").write_text(text)
    print(m["id"], len(m["files"]), len(m["volumes"]))
