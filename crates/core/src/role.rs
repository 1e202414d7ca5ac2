//! Roles and the one rule that keeps delegation safe: nobody grants more than
//! they hold, and platform and tenant roles never mix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a key may do. `Operator` belongs to the platform; the other three
/// belong to one tenant, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the platform: plans, tenants, approvals. Never tied to a tenant.
    Operator,
    /// Manages one tenant: its keys and members, and everything a developer may do.
    Admin,
    /// Reads and writes one tenant's data.
    Developer,
    /// Reads one tenant's data.
    Reader,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Operator, Role::Admin, Role::Developer, Role::Reader];
    pub const TENANT_ROLES: [Role; 3] = [Role::Admin, Role::Developer, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// True for the roles that belong to a tenant.
    pub fn is_tenant_role(self) -> bool {
        self != Role::Operator
    }

    /// Rank within a tenant; higher means more powerful.
    fn tenant_rank(self) -> u8 {
        match self {
            Role::Operator => 3,
            Role::Admin => 2,
            Role::Developer => 1,
            Role::Reader => 0,
        }
    }

    /// True when a holder of `self` may act where `required` is needed inside
    /// a tenant. The operator is deliberately excluded: operators reach tenant
    /// resources only through routes that name them, never by rank.
    pub fn satisfies_tenant(self, required: Role) -> bool {
        self.is_tenant_role() && self.tenant_rank() >= required.tenant_rank()
    }

    /// True when a holder of `self` may create a tenant key with role `granted`.
    /// Operators create any tenant role (they create a tenant's first admin);
    /// tenant roles never grant above themselves; nobody mints operator keys
    /// through a tenant.
    pub fn may_grant_tenant_role(self, granted: Role) -> bool {
        granted.is_tenant_role()
            && (self == Role::Operator || self.tenant_rank() >= granted.tenant_rank())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn tenant_ranks_are_ordered() {
        assert!(Role::Admin.satisfies_tenant(Role::Developer));
        assert!(Role::Developer.satisfies_tenant(Role::Reader));
        assert!(!Role::Reader.satisfies_tenant(Role::Developer));
        assert!(!Role::Developer.satisfies_tenant(Role::Admin));
        assert!(
            !Role::Operator.satisfies_tenant(Role::Reader),
            "operators are not tenant members"
        );
    }

    #[test]
    fn nobody_grants_above_their_own_role() {
        assert!(Role::Admin.may_grant_tenant_role(Role::Admin));
        assert!(Role::Admin.may_grant_tenant_role(Role::Reader));
        assert!(!Role::Developer.may_grant_tenant_role(Role::Admin));
        assert!(!Role::Reader.may_grant_tenant_role(Role::Developer));
        for role in Role::ALL {
            assert!(
                !role.may_grant_tenant_role(Role::Operator),
                "{role} must not mint operator keys"
            );
        }
        assert!(Role::Operator.may_grant_tenant_role(Role::Admin));
    }
}
