terraform {
  required_version = ">= 1.3"

  required_providers {
    # Only `values` is used on helm_release, an argument the 2.x and 3.x providers share, so the
    # module fits beside Cast AI's cluster modules whichever of the two they pin.
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.12, < 4.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
  }
}
