"""The data: what samples exist, where their bytes are, which ones a rank reads in an epoch.

Owns scanning ImageFolder trees (:mod:`.folders`: links followed once, one class list per dataset) and
WebDataset shards into the on-disk sample index, which proves it belongs to its data (:mod:`.index`,
:mod:`.shards`, :mod:`.gzshards`), reading a sample's encoded bytes (:mod:`.reader`), the checks every
sample passes before a decoder sees it, with their reason codes and the substitution rule
(:mod:`.checks`, the JPEG marker walk :mod:`.jpegwalk`), the files a decoder refused, kept beside the index
for later runs (:mod:`.badfiles`), the epoch order per rank as a pure function (:mod:`.sampler`), and the
datasets vitdata generates itself (:mod:`.synthetic`, :mod:`.selfid`) or resolves from a run's options
(:mod:`.sources`).

May import: ``vitdata.errors``, ``vitdata.io``. Never decodes pixels, and knows nothing of DALI, torch
or losses.
"""
from vitdata.data.index import SampleIndex, build_index, open_index
from vitdata.data.reader import SampleReader
from vitdata.data.sampler import EpochPlan, Sampler

__all__ = ["SampleIndex", "SampleReader", "build_index", "open_index", "EpochPlan", "Sampler"]
