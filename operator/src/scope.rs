//! Where the operator acts: every namespace (the chart's ClusterRole), or the namespaces it is
//! given (`--watch-namespaces`, a Role in each), so that a platform can run it with no access to
//! the rest of the cluster (docs/security.md).

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};

/// The namespaces the operator watches and writes in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace.
    #[default]
    Cluster,
    /// Only these (never empty).
    Namespaces(Vec<String>),
}

impl WatchScope {
    /// The scope of `--watch-namespaces`: none listed is the whole cluster.
    pub fn from_flag<S: AsRef<str>>(namespaces: &[S]) -> Self {
        let mut listed: Vec<String> = namespaces
            .iter()
            .map(|n| n.as_ref().trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        listed.sort();
        listed.dedup();
        if listed.is_empty() {
            WatchScope::Cluster
        } else {
            WatchScope::Namespaces(listed)
        }
    }

    /// One Api over `K` per watched namespace, or one over all of them.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match self {
            WatchScope::Cluster => vec![Api::all(client.clone())],
            WatchScope::Namespaces(namespaces) => namespaces
                .iter()
                .map(|namespace| Api::namespaced(client.clone(), namespace))
                .collect(),
        }
    }

    /// `None` for the whole cluster, else each watched namespace.
    pub fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            WatchScope::Cluster => vec![None],
            WatchScope::Namespaces(namespaces) => namespaces.iter().cloned().map(Some).collect(),
        }
    }

    /// For messages: `all namespaces` or the list.
    pub fn describe(&self) -> String {
        match self {
            WatchScope::Cluster => "all namespaces".to_owned(),
            WatchScope::Namespaces(namespaces) => format!("namespaces {}", namespaces.join(", ")),
        }
    }
}

/// An Api over `K` in `namespace`, or across the cluster for `None`.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_namespace_listed_is_the_whole_cluster() {
        assert_eq!(WatchScope::from_flag::<&str>(&[]), WatchScope::Cluster);
        assert_eq!(WatchScope::from_flag(&[""]), WatchScope::Cluster);
        assert_eq!(
            WatchScope::from_flag(&["b", " a", "b"]),
            WatchScope::Namespaces(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            WatchScope::from_flag(&["a"]).namespaces(),
            [Some("a".to_owned())]
        );
        assert_eq!(WatchScope::Cluster.namespaces(), [None]);
    }
}
