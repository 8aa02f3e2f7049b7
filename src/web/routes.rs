//! A router that remembers its routes: every route is added through [`Routes::get`],
//! [`Routes::post`], [`Routes::put`] or [`Routes::delete`], which record the method and path, so the
//! authentication sweep test walks the real route table rather than a copy of it.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{self, MethodRouter};

pub struct Routes<S> {
    router: Router<S>,
    table: Vec<(&'static str, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes { router: Router::new(), table: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<S>) -> Self {
        self.table.push((method, path));
        self.router = self.router.route(path, route);
        self
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("GET", path, routing::get(handler))
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("POST", path, routing::post(handler))
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("PUT", path, routing::put(handler))
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("DELETE", path, routing::delete(handler))
    }

    /// `(method, path)` of every route, paths with `{param}` placeholders.
    pub fn table(&self) -> &[(&'static str, &'static str)] {
        &self.table
    }

    pub fn with_state(self, state: S) -> (Router, Vec<(&'static str, &'static str)>) {
        (self.router.with_state(state), self.table)
    }
}
