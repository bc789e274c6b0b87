"""The Hugging Face Space's entry point: the identification page of :mod:`bioscan5m.apps.space`.

    python spaces/app.py                      # the embedded default: synthetic release + tiny CLIBD
    python spaces/app.py --index runs/index   # any index made by `bioscan5m index build`

The Space installs ``bioscan5m`` from the wheel named in requirements.txt; the page itself lives in the
package so that ``bioscan5m serve`` works from any installation, not only from a checkout.
"""

from bioscan5m.apps.space import main

if __name__ == "__main__":
    raise SystemExit(main())
