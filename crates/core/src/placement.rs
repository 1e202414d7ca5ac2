//! Placement: which storage pool holds a tenant's data. A tenant's region
//! must be its pool's region (data residency), and the pool must offer the
//! tenant's isolation model.

use crate::ids::{PoolName, RegionId};
use crate::record::Isolation;

/// What placement needs to know of a configured pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: PoolName,
    pub region: RegionId,
    pub models: Vec<Isolation>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no storage pool is named {0}")]
    UnknownPool(PoolName),
    #[error("pool {pool} is in region {pool_region}, not in the tenant's region {region}")]
    WrongRegion {
        pool: PoolName,
        pool_region: RegionId,
        region: RegionId,
    },
    #[error("pool {pool} does not offer the {} model", .model.as_str())]
    ModelNotOffered { pool: PoolName, model: Isolation },
    #[error("no storage pool in region {region} offers the {} model", .model.as_str())]
    NoPool { region: RegionId, model: Isolation },
}

/// Chooses the pool for a tenant of `region` and `model`: the requested one
/// if it fits, otherwise the first configured pool that does.
pub fn place(
    pools: &[PoolSpec],
    region: &RegionId,
    model: Isolation,
    requested: Option<&PoolName>,
) -> Result<PoolName, PlacementError> {
    let fits = |pool: &PoolSpec| &pool.region == region && pool.models.contains(&model);
    match requested {
        Some(name) => {
            let pool = pools
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| PlacementError::UnknownPool(name.clone()))?;
            if &pool.region != region {
                return Err(PlacementError::WrongRegion {
                    pool: pool.name.clone(),
                    pool_region: pool.region.clone(),
                    region: region.clone(),
                });
            }
            if !fits(pool) {
                return Err(PlacementError::ModelNotOffered {
                    pool: pool.name.clone(),
                    model,
                });
            }
            Ok(pool.name.clone())
        }
        None => pools
            .iter()
            .find(|p| fits(p))
            .map(|p| p.name.clone())
            .ok_or_else(|| PlacementError::NoPool {
                region: region.clone(),
                model,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, region: &str, models: &[Isolation]) -> PoolSpec {
        PoolSpec {
            name: name.parse().unwrap(),
            region: region.parse().unwrap(),
            models: models.to_vec(),
        }
    }

    fn pools() -> Vec<PoolSpec> {
        vec![
            pool("eu-shared", "eu", &[Isolation::Pooled]),
            pool(
                "eu-private",
                "eu",
                &[Isolation::Pooled, Isolation::Dedicated],
            ),
            pool("us-1", "us", &[Isolation::Pooled, Isolation::Dedicated]),
        ]
    }

    #[test]
    fn the_first_pool_of_the_region_offering_the_model_is_chosen() {
        let eu = "eu".parse().unwrap();
        assert_eq!(
            place(&pools(), &eu, Isolation::Pooled, None)
                .unwrap()
                .as_str(),
            "eu-shared"
        );
        assert_eq!(
            place(&pools(), &eu, Isolation::Dedicated, None)
                .unwrap()
                .as_str(),
            "eu-private"
        );
        let ap = "ap".parse().unwrap();
        assert!(matches!(
            place(&pools(), &ap, Isolation::Pooled, None),
            Err(PlacementError::NoPool { .. })
        ));
        assert!(matches!(
            place(&pools(), &eu, Isolation::Schema, None),
            Err(PlacementError::NoPool { .. })
        ));
    }

    #[test]
    fn a_requested_pool_must_exist_be_in_the_region_and_offer_the_model() {
        let eu: RegionId = "eu".parse().unwrap();
        let ask = |name: &str, model| place(&pools(), &eu, model, Some(&name.parse().unwrap()));
        assert_eq!(
            ask("eu-private", Isolation::Pooled).unwrap().as_str(),
            "eu-private"
        );
        assert!(matches!(
            ask("us-1", Isolation::Pooled),
            Err(PlacementError::WrongRegion { .. })
        ));
        assert!(matches!(
            ask("eu-shared", Isolation::Dedicated),
            Err(PlacementError::ModelNotOffered { .. })
        ));
        assert!(matches!(
            ask("nowhere", Isolation::Pooled),
            Err(PlacementError::UnknownPool(_))
        ));
    }
}
