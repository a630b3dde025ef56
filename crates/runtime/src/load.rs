//! The checks a file passes before it is compiled and instantiated, each failing with a message
//! that says what is wrong: not wasm, a core module, another world, a forbidden import.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::error::LoadError;
use super::sandbox::{ALLOWED_SUMMARY, import_allowed};

const MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// The functions a plugin must export.
const EXPORTS: [&str; 2] = ["describe", "handle"];

/// Refuses bytes that are not a WebAssembly component before spending time compiling them.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Checks that the component exports the `handler` world's functions and imports nothing
/// outside the sandbox's policy.
pub(crate) fn check_world(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let component_type = component.component_type();
    let exports: Vec<(String, bool)> = component_type
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_owned(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    let missing: Vec<String> = EXPORTS
        .iter()
        .filter(|wanted| {
            !exports
                .iter()
                .any(|(name, is_func)| name == *wanted && *is_func)
        })
        .map(|name| format!("`{name}`"))
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = exports.iter().map(|(name, _)| name.as_str()).collect();
        return Err(LoadError::OtherWorld {
            missing: missing.join(" and "),
            exports: if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
        });
    }
    let forbidden: Vec<String> = component_type
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !import_allowed(name))
        .map(|name| format!("`{name}`"))
        .collect();
    if !forbidden.is_empty() {
        return Err(LoadError::ForbiddenImports {
            imports: forbidden.join(", "),
            allowed: ALLOWED_SUMMARY,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_not_wasm() {
        assert!(matches!(
            check_header(b"hello world, not wasm"),
            Err(LoadError::NotWasm)
        ));
    }

    #[test]
    fn a_core_module_is_named_as_such() {
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
    }

    #[test]
    fn a_component_header_passes() {
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
