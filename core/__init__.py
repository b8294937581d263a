"""The base layer: what every other layer needs and that knows nothing of SUMO, torch or LangChain.

* `errors`   UserError, the seed and count checks, and the command line's error contract (`run_app`)
* `settings` the configuration tree's reader: dataclass sections, TOML files, `--set`, help texts
* `jsonio`   atomic writes and JSON that tolerates NaN
* `paths`    every path under COSIM_HOME
* `outputs`  the one policy for a command's output folder
* `secrets`  the one redactor of secrets in logs and files
* `procs`    cores, child processes, a pool of worker processes
* `raytools` Ray start-up and clean-up
"""
