//! The JavaScript sandbox (QuickJS through rquickjs) for `javascript` nodes and `expression`
//! conditions: a memory cap, an uncatchable time limit, no I/O (no modules, no `fetch`, no
//! `process`), a fresh global scope per evaluation, and `ctx` (the instance context) in scope.
//!
//! The runtime is `!Send`, so each thread keeps its own; callers run evaluations on blocking
//! threads (`tokio::task::spawn_blocking`), never on the async workers.

use rquickjs::{CatchResultExt, Context, Runtime, Value as JsValue};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Set when the process stops what still runs at the end of a shutdown drain: every script
/// running on any thread is interrupted at its next check. Process-wide on purpose: scripts
/// run on blocking threads that an aborted task cannot reach, and the process is exiting.
static ABORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Interrupts every running script of this process, and every later one (shutdown only).
pub fn abort_all() {
    ABORTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Memory available to one thread's scripts.
pub const MEMORY_LIMIT_BYTES: usize = 32 << 20;

struct Sandbox {
    runtime: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
}

impl Sandbox {
    fn new() -> Result<Self, String> {
        let runtime = Runtime::new().map_err(|e| e.to_string())?;
        runtime.set_memory_limit(MEMORY_LIMIT_BYTES);
        runtime.set_max_stack_size(512 << 10);
        let deadline = Rc::new(Cell::new(None::<Instant>));
        let watched = deadline.clone();
        // Returning true raises an uncatchable "interrupted" error inside the script.
        runtime.set_interrupt_handler(Some(Box::new(move || {
            ABORTED.load(std::sync::atomic::Ordering::Relaxed)
                || watched.get().is_some_and(|t| Instant::now() >= t)
        })));
        Ok(Self { runtime, deadline })
    }

    fn eval(&self, source: &str, ctx: &Value, timeout: Duration) -> Result<Value, String> {
        self.deadline.set(Some(Instant::now() + timeout));
        let result = self.eval_inner(source, ctx);
        self.deadline.set(None);
        self.runtime.run_gc();
        result.map_err(|e| {
            if e.contains("interrupted") {
                format!("script timed out after {} ms", timeout.as_millis())
            } else {
                e
            }
        })
    }

    fn eval_inner(&self, source: &str, ctx: &Value) -> Result<Value, String> {
        let context = Context::full(&self.runtime).map_err(|e| e.to_string())?;
        context.with(|js| {
            let input = js
                .json_parse(ctx.to_string())
                .catch(&js)
                .map_err(|e| e.to_string())?;
            js.globals().set("ctx", input).map_err(|e| e.to_string())?;
            let mut value: JsValue = js.eval(source).catch(&js).map_err(|e| e.to_string())?;
            if let Some(promise) = value.as_promise().cloned() {
                // Drives the job queue (under the same deadline) until the promise settles.
                value = promise
                    .finish::<JsValue>()
                    .catch(&js)
                    .map_err(|e| e.to_string())?;
            }
            match js
                .json_stringify(value)
                .catch(&js)
                .map_err(|e| e.to_string())?
            {
                Some(text) => serde_json::from_str(&text.to_string().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string()),
                None => Ok(Value::Null), // undefined, a function, a symbol
            }
        })
    }
}

thread_local! {
    static SANDBOX: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
}

/// Evaluates `source` (an expression or an IIFE) with `ctx` in scope; the result comes back
/// as JSON. Errors carry the script's message; a timeout or the memory cap is an error too.
pub fn eval(source: &str, ctx: &Value, timeout: Duration) -> Result<Value, String> {
    SANDBOX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Sandbox::new()?);
        }
        let sandbox = slot.as_ref().ok_or("sandbox unavailable")?;
        sandbox.eval(source, ctx, timeout)
    })
}

/// A `javascript` node's code, wrapped as upstream does: `(function(){ <code> })()`.
pub fn run_node_code(code: &str, ctx: &Value, timeout: Duration) -> Result<Value, String> {
    eval(&format!("(function(){{\n{code}\n}})()"), ctx, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn scripts_see_ctx_and_return_json() {
        assert_eq!(
            run_node_code(
                "return ctx.input.a + 1",
                &json!({"input": {"a": 41}}),
                SECOND
            ),
            Ok(json!(42))
        );
        assert_eq!(
            eval(
                "({s: `x${ctx.n}`, l: [1,2].map(v => v * 2)})",
                &json!({"n": 1}),
                SECOND
            ),
            Ok(json!({"s": "x1", "l": [2, 4]}))
        );
        assert_eq!(
            run_node_code("return Promise.resolve(7)", &json!({}), SECOND),
            Ok(json!(7))
        );
        assert_eq!(
            run_node_code("return undefined", &json!({}), SECOND),
            Ok(Value::Null)
        );
    }

    #[test]
    fn errors_time_and_memory_are_bounded() {
        let err = run_node_code("throw new Error('boom')", &json!({}), SECOND).expect_err("throws");
        assert!(err.contains("boom"), "{err}");
        let start = Instant::now();
        let err = run_node_code(
            "for(;;){ try { while(true){} } catch(e) {} }",
            &json!({}),
            Duration::from_millis(100),
        )
        .expect_err("loops");
        assert!(err.contains("timed out"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let err = run_node_code(
            "let a=[]; while(true) a.push(new Array(100000).fill(1.5))",
            &json!({}),
            Duration::from_secs(5),
        )
        .expect_err("oom");
        assert!(err.contains("memory"), "{err}");
        assert_eq!(
            run_node_code("return 1", &json!({}), SECOND),
            Ok(json!(1)),
            "the runtime recovers"
        );
    }

    #[test]
    fn there_is_no_io_and_no_leak_between_runs() {
        let kinds = eval(
            "[typeof fetch, typeof require, typeof process, typeof setTimeout, typeof XMLHttpRequest]",
            &json!({}),
            SECOND,
        );
        assert_eq!(
            kinds,
            Ok(json!([
                "undefined",
                "undefined",
                "undefined",
                "undefined",
                "undefined"
            ]))
        );
        eval("globalThis.leak = 1", &json!({}), SECOND).expect("runs");
        assert_eq!(
            eval("typeof leak", &json!({}), SECOND),
            Ok(json!("undefined"))
        );
    }
}
