// SIMT emulation stand-in for the CUDA toolkit header of this name (see simt_emulation.h).
#pragma once
#include "simt_emulation.h"
