#pragma once
// Bit layouts: lowbit's k-bit stream, GPTQ, AWQ and the 4-bit nibble orders.

#include "awq.hpp"
#include "bits.hpp"
#include "bnb.hpp"
#include "gptq.hpp"
