#!/usr/bin/env python3
"""Write random-weight GPT-SoVITS development models in the official formats (same as `gsv-devmodel`).

Example: python scripts/make_dev_models.py --out models/dev-full --size full --version v2
"""

from dora_gpt_sovits.devmodels.bundle import main

if __name__ == "__main__":
    main()
