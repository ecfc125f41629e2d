//! Infra's modules depend only downwards: a test reads each module's source and fails on an
//! import of a module at or above it in [`ORDER`], which is also the order lib.rs documents.

/// Infra's modules, lowest first: each may use only those before it.
const ORDER: [&str; 23] = [
    "json",
    "chain",
    "error",
    "upcast",
    "event",
    "bus",
    "tx",
    "personal",
    "writer",
    "store",
    "checkpoints",
    "snapshots",
    "log",
    "audit",
    "envelope",
    "relay",
    "feed",
    "repository",
    "idempotency",
    "erasure",
    "secrets",
    "tokens",
    "config",
];

/// The modules `source` names through `crate::`: `crate::a::b`, `crate::{a, b::c}`, and the
/// crate's macros (`crate::on_pool!`, `crate::on_tx!`, defined in `tx`). A module's tests are
/// left out: they may use anything.
fn imports(source: &str) -> Vec<String> {
    let source = source.split("#[cfg(test)]\nmod tests").next().unwrap_or(source);
    let mut found = Vec::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or_default())
                .collect(),
            None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default()],
        };
        for name in names {
            let module = match name {
                "on_pool" | "on_tx" => "tx",
                other => other,
            };
            if !module.is_empty() && !found.iter().any(|f| f == module) {
                found.push(module.to_owned());
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    for (rank, module) in ORDER.iter().enumerate() {
        let source = std::fs::read_to_string(dir.join(format!("{module}.rs")))
            .unwrap_or_else(|e| panic!("{module}.rs: {e}"));
        for import in imports(&source) {
            // Re-exports at the crate root (`crate::Store`) name no module of their own.
            let Some(at) = ORDER.iter().position(|m| *m == import) else { continue };
            if at >= rank && import != *module {
                upward.push(format!("{module} imports {import}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that go up (or across) the layers: {upward:?}");
}

#[test]
fn every_module_of_the_crate_has_a_layer() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        let Some(module) = name.strip_suffix(".rs") else { continue };
        if !["lib", "layering"].contains(&module) && !ORDER.contains(&module) {
            missing.push(module.to_owned());
        }
    }
    assert!(missing.is_empty(), "modules without a place in ORDER: {missing:?}");
}

#[test]
fn imports_are_read_in_each_form() {
    let source = "use crate::store::Store;\nuse crate::{event, tx::Tx};\ncrate::on_pool!(x, |p| 1);\n\
                  crate::RawJson::new();\n#[cfg(test)]\nmod tests {\n use crate::relay;\n}";
    assert_eq!(imports(source), ["store", "event", "tx", "RawJson"]);
}
