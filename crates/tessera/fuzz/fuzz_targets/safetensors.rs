//! Any bytes given as a safetensors file give its tensors or an error, never a panic, an
//! allocation abort or an out-of-bounds read (the header's sizes are checked against the bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::weights::safetensors::safetensors_from_bytes;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) =
        safetensors_from_bytes(data, std::path::Path::new("fuzz"), &tessera::Device::Cpu)
    else {
        return;
    };
    for t in tensors.values() {
        std::hint::black_box(t.elem_count());
        if let Ok(f) = t.to_dtype(tessera::DType::F32).and_then(|t| t.flatten_all()) {
            let _ = f.to_vec1::<f32>();
        }
    }
});
