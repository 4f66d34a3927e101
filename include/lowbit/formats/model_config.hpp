#pragma once
// A model's config.json carried to a rewritten checkpoint: where a
// config.json sits beside the input checkpoint and the output goes to
// another folder, the output's folder gets that config.json with the
// quantization block set (what transformers and vLLM read to load it).

#include <filesystem>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "../core/error.hpp"
#include "../detail/file_io.hpp"
#include "json.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace model_config {

class beside {
public:
    /// Reads the config.json beside `in` when there is one and `out` is in
    /// another folder (checked, like `out`, not to be one of `inputs`); call
    /// before writing `out`, so a bad config.json stops the run first.
    beside(const std::filesystem::path& in, const std::filesystem::path& out,
           std::initializer_list<std::pair<std::string_view, const std::filesystem::path*>> inputs)
        : from_(in.parent_path() / "config.json"), to_(out.parent_path() / "config.json") {
        if (!std::filesystem::exists(from_) ||
            std::filesystem::weakly_canonical(from_) == std::filesystem::weakly_canonical(to_))
            return;
        lowbit::detail::check_output_target(to_, "config.json", inputs);
        try {
            const lowbit::detail::mapped_file text(from_, "config.json");
            const auto b = text.bytes();
            config_ = json::parse(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
        } catch (const error& e) {
            rethrow_with_context(e, from_.string());
        }
        if (!config_->is_object()) LOWBIT_THROW(errc::corrupt_file, from_.string() + ": not a JSON object");
    }

    explicit operator bool() const noexcept { return config_.has_value(); }

    /// Writes the config with `key` set to the JSON text `block` beside the
    /// output (atomically); returns its path, or an empty path where there
    /// is no config to carry.
    std::filesystem::path write(const std::string& key, const std::string& block) {
        if (!config_) return {};
        config_->set(key, json::parse(block));
        lowbit::detail::atomic_file f(to_, "config.json");
        const std::string text = json::dump_python(*config_) + "\n";
        f.write(std::as_bytes(std::span<const char>(text.data(), text.size())));
        f.commit();
        return to_;
    }

private:
    std::filesystem::path from_, to_;
    std::optional<json::value> config_;
};

}  // namespace model_config
LOWBIT_NAMESPACE_END
