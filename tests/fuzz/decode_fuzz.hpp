// What decode_fuzz.cpp offers its drivers (libFuzzer, and replay_main.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

/// Decodes one input; aborts on anything but success or serialization_error.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

/// Valid inputs for the corpus, one per message kind: (file name, bytes).
std::vector<std::pair<std::string, std::vector<std::byte>>> decode_fuzz_seeds();

/// wire_fuzz.cpp: decodes one input of a kind from 6 up (the worker
/// protocol's messages), and adds their seeds.
void decode_wire_kind(int kind, std::span<const std::byte> bytes);
void add_wire_seeds(std::vector<std::pair<std::string, std::vector<std::byte>>>& seeds);
