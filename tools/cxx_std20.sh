#!/usr/bin/env bash
# A C++ compiler for building mmcv 2.1.0 against torch >= 2.14, whose headers need C++20: mmcv's
# setup.py asks for -std=c++14/17 after any flags from the environment, so the standard is raised
# here, in the compiler command, instead (tools/setup_env.sh sets CXX to this script). Everything
# else passes through to ${MMFOCAL_REAL_CXX:-c++}.
args=()
for arg in "$@"; do
  case "$arg" in
    -std=c++14 | -std=c++17) args+=(-std=c++20) ;;
    *) args+=("$arg") ;;
  esac
done
exec "${MMFOCAL_REAL_CXX:-c++}" "${args[@]}"
